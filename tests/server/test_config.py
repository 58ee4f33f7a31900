"""Server configuration from TOML/YAML files and flags."""
import pytest

from grserve.server.config import ServerConfig


def test_toml_then_overrides(tmp_path):
    f = tmp_path / "grserve.toml"
    f.write_text('port = 9001\nmax_beam_width = 128\nmax_batch_rows = 256\nhistory_overflow = "reject"\n')
    c = ServerConfig.load(f, port=9002, host=None)
    assert (c.port, c.max_beam_width, c.history_overflow, c.host) == (9002, 128, "reject", "127.0.0.1")
    assert c.engine_config().max_beam_width == 128


def test_yaml(tmp_path):
    f = tmp_path / "grserve.yaml"
    f.write_text("default_timeout_ms: 250\nlog_requests: true\n")
    c = ServerConfig.load(f)
    assert c.default_timeout_ms == 250 and c.log_requests is True


@pytest.mark.parametrize("text,match", [("colour = 1\n", "unknown settings"),
                                        ('history_overflow = "drop"\n', "history_overflow"),
                                        ("max_beam_width = 4096\n", "max_batch_rows")])
def test_bad_files_are_clear_errors(tmp_path, text, match):
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ValueError, match=match):
        ServerConfig.load(f)
