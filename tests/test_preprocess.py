"""Preprocessing must give the model exactly what torchvision's reference transforms give it."""

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from pidaemon.model.preprocess import Normalizer, crop_and_resize, is_valid_frame

from .conftest import IMAGES


@pytest.mark.parametrize("name", ["grace_hopper.jpg", "cat_720p.jpg"])
def test_normalizer_matches_totensor_and_normalize(name):
    rgb = crop_and_resize(cv2.imread(str(IMAGES / name)))
    reference = transforms.Compose([
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])(Image.fromarray(rgb)).unsqueeze(0)
    ours = Normalizer()(rgb)
    assert ours.shape == (1, 3, 224, 224)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_crop_keeps_the_centre_and_converts_bgr_to_rgb():
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:, :, 0] = 255  # blue in BGR
    frame[:, :80] = (0, 0, 255)  # red band outside the central square
    rgb = crop_and_resize(frame)
    assert rgb.shape == (224, 224, 3)
    assert (rgb[:, :, 2] == 255).all() and (rgb[:, :, 0] == 0).all()


def test_crop_handles_portrait_and_tiny_frames():
    assert crop_and_resize(np.zeros((1080, 720, 3), np.uint8)).shape == (224, 224, 3)
    assert crop_and_resize(np.zeros((16, 16, 3), np.uint8)).shape == (224, 224, 3)


def test_bad_frames_are_recognised():
    assert is_valid_frame(np.zeros((240, 320, 3), np.uint8))
    assert not is_valid_frame(None)
    assert not is_valid_frame(np.zeros((0, 0, 3), np.uint8))
    assert not is_valid_frame(np.zeros((240, 320), np.uint8))
    assert not is_valid_frame(np.zeros((240, 320, 3), np.float32))
    assert not is_valid_frame(np.zeros((240, 320, 4), np.uint8))
