import pytest
from studykit import write_study


@pytest.fixture
def study_file(tmp_path):
    return write_study(tmp_path)
