from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MUSICAL_INSTRUMENTS = SHARED_DATA / "reviews_Musical_Instruments_5.json.gz"


@pytest.fixture
def musical_instruments() -> Path:
    if not MUSICAL_INSTRUMENTS.is_file():
        pytest.skip(f"real review data not found at {MUSICAL_INSTRUMENTS} (../shared/data beside the checkout)")
    return MUSICAL_INSTRUMENTS


@pytest.fixture(scope="session")
def tokenizer():
    """The real SmolLM2 tokenizer (ChatML template), loaded from the backbone cache."""
    from dep_lightning.models.backbone import load_tokenizer

    return load_tokenizer()
