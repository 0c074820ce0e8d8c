import numpy as np
import pytest

from gmosred.frame.sections import Section, parse_binning


def test_real_header_sections():
    from conftest import real_headers

    ext1, ext3 = real_headers()[1], real_headers()[3]
    data = Section.parse(ext1["DATASEC"])
    assert data == Section(0, 1024, 0, 2304)
    assert Section.parse(ext1["BIASSEC"]) == Section(1024, 1056, 0, 2304)
    assert Section.parse(ext3["DATASEC"]) == Section(32, 1056, 0, 2304)
    assert Section.parse(ext3["BIASSEC"]).shape == (2304, 32)
    assert Section.parse(ext3["DETSEC"]) == Section(4096, 6144, 0, 4608)
    assert Section.parse(ext1["CCDSEC"]).binned(*parse_binning(ext1["CCDSUM"])) == Section(0, 1024, 0, 2304)
    image = np.arange(2304 * 1056).reshape(2304, 1056)
    assert image[data.slices].shape == (2304, 1024)
    assert image[Section.parse(ext3["DATASEC"]).slices][0, 0] == 32
    assert str(data) == "[1:1024,1:2304]"


@pytest.mark.parametrize("text", ["[1:10]", "1:10,1:10", "[0:10,1:10]", "[10:1,1:10]", "[a:b,1:2]", ""])
def test_bad_sections(text):
    with pytest.raises(ValueError):
        Section.parse(text)


def test_binning():
    assert parse_binning("2 2  ") == (2, 2)
    assert parse_binning("2 1") == (2, 1)
    with pytest.raises(ValueError):
        parse_binning("2x2")
    with pytest.raises(ValueError):
        Section(1, 10, 0, 8).binned(2, 2)
