"""extract_features: batching, flip averaging of features and masks, no_grad, bad embeddings."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from occreid.errors import OccreidError
from occreid.eval import extract_features
from occreid.models.base import Embedding

N, W = 10, 6


class Items(torch.utils.data.Dataset):
    """Images whose first pixel row encodes the index, so a left-right flip changes the feature."""

    def __init__(self, n=N):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        image = torch.zeros(3, 4, W)
        image[0, 0] = torch.arange(W, dtype=torch.float32) * (i + 1)  # a ramp: not mirror-symmetric
        return {"image": image, "camid": i % 3, "pid": i, "index": i}


def embed(images, camids):
    assert not torch.is_grad_enabled()
    feat = images[:, 0, 0, :] + camids[:, None]  # [B, W]; the camera id reaches the embedding
    return Embedding(feat, torch.sigmoid(feat))


def _expected(flip):
    rows = []
    for i in range(N):
        ramp = torch.arange(W, dtype=torch.float32) * (i + 1)
        cam = i % 3
        f = ramp + cam
        if flip:
            fm = ramp.flip(0) + cam
            rows.append(((f + fm) / 2, (torch.sigmoid(f) + torch.sigmoid(fm)) / 2))
        else:
            rows.append((f, torch.sigmoid(f)))
    return torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])


@pytest.mark.parametrize("flip", [False, True])
def test_features_and_masks_with_and_without_flip(flip):
    feats, masks = extract_features(embed, DataLoader(Items(), batch_size=4), flip)
    exp_f, exp_m = _expected(flip)
    torch.testing.assert_close(feats, exp_f)
    torch.testing.assert_close(masks, exp_m)
    if flip:  # averaging a ramp with its mirror gives a constant row: (i + 1) * (W - 1) / 2 + cam
        torch.testing.assert_close(feats[:, 0], feats[:, -1])


def test_a_plain_iterable_of_batches_and_float16_output():
    batches = list(DataLoader(Items(), batch_size=3))  # no .dataset: the list-and-concatenate path
    feats, masks = extract_features(lambda x, c: embed(x, c).feat, batches, flip=True, out_dtype=torch.float16)
    assert masks is None and feats.dtype == torch.float16
    torch.testing.assert_close(feats.float(), _expected(True)[0], rtol=1e-3, atol=1e-2)


def test_bad_embeddings_are_explained():
    loader = DataLoader(Items(), batch_size=5)
    cases = [
        (lambda x, c: Embedding(torch.full((x.shape[0], W), float("nan"))), "features contain NaN"),
        (lambda x, c: Embedding(torch.ones(x.shape[0] - 1, W)), "features have shape"),
        (lambda x, c: Embedding(torch.ones(x.shape[0], W), torch.ones(x.shape[0], 2)), "mask shape"),
        (lambda x, c: "feat", "expected an Embedding"),
        (lambda x, c: Embedding(torch.ones(x.shape[0], W), torch.ones(x.shape[0], W) if c[0] == 0 else None),
         "masks for some batches only"),
    ]
    for fn, message in cases:
        with pytest.raises(OccreidError, match=message) as err:
            extract_features(fn, loader, flip=False)
        assert err.value.fix
    with pytest.raises(OccreidError, match="not a dict with 'image' and 'camid'"):
        extract_features(embed, [(torch.zeros(2, 3, 4, W), torch.zeros(2))], flip=False)
    with pytest.raises(OccreidError, match="yielded no images"):
        extract_features(embed, [], flip=False)
    with pytest.raises(OccreidError, match="loader yielded 5 images but its dataset has 10"):
        extract_features(embed, DataLoader(Items(), batch_size=5, sampler=range(5)), flip=False)
