"""Loss functions shared by the methods (ID cross-entropy, batch-hard triplet)."""

from occreid.losses.classification import IDLoss, id_loss
from occreid.losses.triplet import TripletLoss, batch_hard_triplet, euclidean_distances, hardest_pairs

__all__ = ["IDLoss", "id_loss", "TripletLoss", "batch_hard_triplet", "euclidean_distances", "hardest_pairs"]
