import pytest
import torch

import mobilemamba
from tests.models.helpers import TINY


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return mobilemamba.create_model("mobilemamba_t2", num_classes=10, scan_backend="torch", **TINY)
