"""Server configuration from TOML/YAML files and flags."""
import pytest

from grserve.server.config import ServerConfig


def test_toml_then_overrides(tmp_path):
    f = tmp_path / "grserve.toml"
    f.write_text('port = 9001\nmax_beam_width = 128\nmax_batch_rows = 256\nhistory_overflow = "reject"\n')
    c = ServerConfig.load(f, port=9002, host=None)
    assert (c.port, c.engine.max_beam_width, c.history_overflow, c.host) == (9002, 128, "reject", "127.0.0.1")
    assert c.engine.max_batch_rows == 256


def test_flat_settings_go_to_the_engine_that_owns_them():
    c = ServerConfig.of(block_size=32, max_batch_rows=4096, device="cpu", overlap=False, port=1)
    assert (c.llm.block_size, c.engine.max_batch_rows, c.port) == (32, 4096, 1)
    assert c.engine.overlap is False and c.llm.overlap is False  # a name both engines have sets both
    with pytest.raises(ValueError, match="^overlap"):
        ServerConfig.of(overlap=True, speculative_tokens=2)


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
