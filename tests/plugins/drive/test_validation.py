"""File names, content types, image sniffing and URL signatures (pure functions)."""

from __future__ import annotations

import time

import pytest

from secureconnect_plugins.drive.signing import BadSignature, UrlExpired, signed_query, verify
from secureconnect_plugins.drive.validation import (
    ContentTypeRefused,
    InvalidFile,
    check_content_type,
    clean_name,
    content_disposition,
    normalise_content_type,
    sniff_matches,
)


@pytest.mark.parametrize(("raw", "clean"), [
    ("report.pdf", "report.pdf"),
    ("../../etc/passwd", "_.._etc_passwd"),
    ("..", "file"),
    (".hidden", "hidden"),
    ("a/b\\c:d*e?f\"g<h>i|j", "a_b_c_d_e_f_g_h_i_j"),
    ("bell\x07\nline\u202etxt.exe", "bell__line_txt.exe"),
    ("CON", "_CON"),
    ("con.txt", "_con.txt"),
    ("COM1.tar.gz", "_COM1.tar.gz"),
    ("console.txt", "console.txt"),
    ("trailing. . ", "trailing"),
    ("   ", "file"),
    ("e\u0301te\u0301.txt", "\u00e9t\u00e9.txt"),  # NFC
])
def test_clean_name(raw: str, clean: str) -> None:
    assert clean_name(raw, 255) == clean


def test_clean_name_bounds_length_and_keeps_the_extension() -> None:
    name = clean_name("x" * 1000 + ".pdf", 100)
    assert len(name) == 100 and name.endswith(".pdf")
    wide = clean_name("\U0001f600" * 300 + ".png", 100)
    assert len(wide) <= 100 and len(wide.encode()) <= 400 and wide.endswith(".png")


def test_content_types() -> None:
    assert normalise_content_type("Image/PNG; charset=x") == "image/png"
    with pytest.raises(InvalidFile):
        normalise_content_type("png")
    check_content_type("image/png", ("image/*",), ())
    with pytest.raises(ContentTypeRefused):
        check_content_type("application/pdf", ("image/*",), ())
    with pytest.raises(ContentTypeRefused):
        check_content_type("image/svg+xml", ("image/*",), ("image/svg+xml",))


def test_sniffing() -> None:
    assert sniff_matches("image/png", b"\x89PNG\r\n\x1a\n....")
    assert not sniff_matches("image/png", b"<svg ")
    assert sniff_matches("image/jpeg", b"\xff\xd8\xff\xe0")
    assert sniff_matches("image/webp", b"RIFF\x00\x00\x00\x00WEBPVP8 ")
    assert not sniff_matches("image/x-unknown", b"anything")
    assert sniff_matches("application/pdf", b"anything")  # only images are sniffed


def test_content_disposition_is_rfc6266() -> None:
    value = content_disposition('naïve "quote";.txt')
    assert value == ("attachment; filename=\"na_ve _quote__.txt\"; "
                     "filename*=UTF-8''na%C3%AFve%20%22quote%22%3B.txt")


def test_signatures() -> None:
    secret = b"k" * 32
    future = int(time.time()) + 60
    query = dict(p.split("=", 1) for p in signed_query(secret, "PUT", "f", future, 10).split("&"))
    assert verify(secret, "PUT", "f", query) == 10
    for method, fid, key in (("GET", "f", secret), ("PUT", "g", secret), ("PUT", "f", b"x" * 32)):
        with pytest.raises(BadSignature):
            verify(key, method, fid, query)
    with pytest.raises(BadSignature):
        verify(secret, "PUT", "f", {**query, "max": "11"})
    with pytest.raises(BadSignature):
        verify(secret, "PUT", "f", {"expires": "x"})
    past = int(time.time()) - 1
    old = dict(p.split("=", 1) for p in signed_query(secret, "PUT", "f", past, 10).split("&"))
    with pytest.raises(UrlExpired):
        verify(secret, "PUT", "f", old)


def test_bad_settings_stop_start_up() -> None:
    from secureconnect import ConfigError
    from secureconnect.app import create_app
    from secureconnect.testing.helpers import make_settings

    for overrides, words in (({"backend": "ftp"}, "drive.backend"),
                             ({"max_file_size": 0}, "drive.max_file_size"),
                             ({"multipart_part_size": 1024}, "drive.multipart_part_size"),
                             ({"denied_content_types": "text/html"}, "list of strings"),
                             ({"url_tll": 5}, "drive.url_tll")):
        with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
            create_app(make_settings({"drive": overrides}))


def test_s3_without_a_bucket_and_production_without_a_secret_refuse() -> None:
    from secureconnect import ConfigError
    from secureconnect.testing.helpers import make_settings
    from secureconnect_plugins.drive.settings import DriveSettings

    with pytest.raises(ConfigError, match="s3_bucket"):
        DriveSettings.from_settings(make_settings({"drive": {"backend": "s3"}}))
    with pytest.raises(ConfigError, match="url_secret"):
        DriveSettings.from_settings(make_settings(), "production")
    ok = DriveSettings.from_settings(make_settings({"drive": {"url_secret": "s" * 40}}),
                                     "production")
    assert ok.url_secret == b"s" * 40
