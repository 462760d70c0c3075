import pytest

from tfseg.data.synthetic import write_polyp_dataset


@pytest.fixture(scope="session")
def polyp_dir(tmp_path_factory):
    """A small synthetic polyp dataset (images/ + masks/) shared by the training tests."""
    return str(write_polyp_dataset(str(tmp_path_factory.mktemp("polyps")), 24, size=(96, 96), seed=0))
