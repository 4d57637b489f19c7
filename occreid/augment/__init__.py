"""Occlusion augmentation for DPM++: saliency-guided patch transfer (SPT), occlusion-aware pairing, baselines.

Flow: person masks from saliency (:func:`binarise`) → OIoU-admitted partners (:func:`build_partner_table`,
stored as :class:`SptSets` by the ``spt_sets`` stage) → at training time :class:`OcclusionPairSampler` +
:class:`PairedTransferDataset` (:func:`build_paired_train_loader`) put each source image and its
transferred view (:func:`transfer_image` / :func:`transfer_tokens`) in the same batch.
"""

from occreid.augment.config import CutPasteConfig, SptConfig, TransferConfig
from occreid.augment.erasing import cut_paste, random_erase
from occreid.augment.oiou import admitted_rolls, binarise, oiou, oiou_matrix, roll_order
from occreid.augment.pairing import (OcclusionPairSampler, PairedTransferDataset, PairItem,
                                     build_paired_train_loader)
from occreid.augment.partners import PartnerTable, SptSets, build_partner_table, load_spt_sets, save_spt_sets
from occreid.augment.transfer import pixel_mask, transfer_image, transfer_sheet, transfer_tokens

__all__ = [
    "CutPasteConfig", "SptConfig", "TransferConfig", "cut_paste", "random_erase", "admitted_rolls", "binarise",
    "oiou", "oiou_matrix", "roll_order", "OcclusionPairSampler", "PairedTransferDataset", "PairItem",
    "build_paired_train_loader", "PartnerTable", "SptSets", "build_partner_table", "load_spt_sets",
    "save_spt_sets", "pixel_mask", "transfer_image", "transfer_sheet", "transfer_tokens",
]
