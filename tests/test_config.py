"""Config parsing: every key of the contract, durations, and one clear line per problem."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from filewarden import config
from filewarden.errors import ConfigError
from tests.conftest import run_cli

EXAMPLE = Path(__file__).parent.parent / "config.example.toml"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("10s", 10),
        ("5m", 300),
        ("6h", 21600),
        ("30d", 2592000),
        ("1h30m", 5400),
        ("2w", 1209600),
        (" 1.5s ", 1.5),
        ("never", None),
        ("NEVER", None),
    ],
)
def test_durations(text: str, seconds: float | None) -> None:
    """Durations read as the contract writes them; "never" is None."""
    assert config.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "s", "10 s", "-5s", "0s", "1y", "ten seconds", "5s5"])
def test_bad_durations(text: str) -> None:
    """Anything else is refused with a message."""
    with pytest.raises(ValueError):
        config.parse_duration(text)


def test_example_config_parses_with_every_contract_key() -> None:
    """config.example.toml is valid and sets every key of the contract."""
    cfg = config.load(EXAMPLE)
    assert cfg.daemon.state_dir == Path("/var/lib/filewarden")
    assert cfg.daemon.socket == Path("/run/filewarden/filewarden.sock")
    assert cfg.daemon.socket_mode == 0o660
    assert cfg.log.format == "auto" and cfg.log.level == "info"
    assert cfg.sweep.interval == 6 * 3600 and cfg.sweep.mount_check_interval == 5
    assert cfg.retention.purge_missing_after is None
    assert cfg.roots[0].path == Path("/srv/photos")
    text = EXAMPLE.read_text()
    for key in [
        "state_dir",
        "socket",
        "socket_mode",
        "socket_group",
        "admin_group",
        "format",
        "level",
        "interval",
        "quick_interval",
        "mount_check_interval",
        "purge_missing_after",
        "require_mountpoint",
        "marker",
        "exclude",
        "mode",
    ]:
        assert f"{key} =" in text, key


def test_example_config_lists_every_key_with_its_default() -> None:
    """config.example.toml has every key of every section, each set to its default (the root's own path aside)."""
    raw = tomllib.loads(EXAMPLE.read_text())
    parsed = config.load(EXAMPLE)
    sections = {
        "daemon": (config.DaemonConfig, parsed.daemon),
        "log": (config.LogConfig, parsed.log),
        "sweep": (config.SweepConfig, parsed.sweep),
        "watch": (config.WatchConfig, parsed.watch),
        "hash": (config.HashConfig, parsed.hash),
        "identity": (config.IdentityConfig, parsed.identity),
        "retention": (config.RetentionConfig, parsed.retention),
        "metrics": (config.MetricsConfig, parsed.metrics),
        "web": (config.WebConfig, parsed.web),
        "ship": (config.ShipConfig, parsed.ship),
    }
    assert set(raw) == {*sections, "root"}
    defaults = config.parse({"root": [{"path": "/srv/photos"}]})
    for name, (cls, value) in sections.items():
        fields = {f.name for f in dataclasses.fields(cls)}
        assert set(raw[name]) == fields, name
        assert value == getattr(defaults, name), name
    assert set(raw["root"][0]) == {f.name for f in dataclasses.fields(config.RootConfig)}
    assert parsed.roots[0] == defaults.roots[0]


def test_defaults_without_sections() -> None:
    """A file with only a root is complete: every other key has its default."""
    cfg = config.parse({"root": [{"path": "/data"}]})
    assert cfg.sweep == config.SweepConfig()
    assert cfg.roots == (config.RootConfig(path=Path("/data")),)


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[daemon]\nsocket_mode = '999'\n", "[daemon] socket_mode"),
        ("[daemon]\nstate_dirr = '/x'\n", "state_dirr: unknown key"),
        ("[metrics]\nlisten = '9851'\n", "[metrics] listen"),
        ("[metrics]\nlisten = 'localhost:99999'\n", "[metrics] listen"),
        ("[sweep]\ninterval = 'soon'\n", "[sweep] interval"),
        ("[sweep]\ninterval = 10\n", "[sweep] interval: must be a string"),
        ("[sweep]\nmount_check_interval = 'never'\n", "[sweep] mount_check_interval"),
        ("[log]\nlevel = 'loud'\n", "[log] level"),
        ("[[root]]\npath = '/a'\nmode = 'magic'\n", "[root[0]] mode"),
        ("[[root]]\nrequire_mountpoint = true\n", "[root[0]] path: missing"),
        ("[[root]]\npath = '/a'\nexclude = '*.tmp'\n", "[root[0]] exclude"),
        ("[[root]]\npath = '/a'\nmarker = '../escape'\n", "[root[0]] marker"),
        ("[[root]]\npath = '/a'\n[[root]]\npath = '/a/b'\n", "overlap"),
        ("[retention]\npurge_missing_after = '30 days'\n", "[retention] purge_missing_after"),
        ("bogus = 1\n", "bogus: unknown key"),
        ("[daemon\n", "TOML syntax error"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, toml: str, needle: str) -> None:
    """Each bad line gives one ConfigError line naming the file and the key."""
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path)) and needle in message


def test_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    """`check-config` and `run` on a bad file print one line naming the key and exit 2."""
    path = tmp_path / "bad.toml"
    path.write_text("[sweep]\ninterval = 'fortnightly'\n[[root]]\npath = '/srv'\n")
    for command in ("check-config", "run"):
        out = run_cli(command, "--config", str(path))
        assert out.returncode == 2, out
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "[sweep] interval" in lines[0] and str(path) in lines[0]


def test_run_without_config_or_root_is_a_usage_error(tmp_path: Path) -> None:
    """With no config file anywhere and no --root, `run` says so and exits 2."""
    env = {"PATH": "/usr/bin:/bin", "FILEWARDEN_CONFIG": str(tmp_path / "absent.toml")}
    out = run_cli("run", env=env)
    assert out.returncode == 2 and "cannot read" in out.stderr


@pytest.mark.skipif(
    config.DEFAULT_CONFIG.exists(), reason="this machine has /etc/filewarden/config.toml"
)
def test_run_with_no_config_file_anywhere_and_no_root_says_so(tmp_path: Path) -> None:
    """No --config, no $FILEWARDEN_CONFIG, no /etc file and no --root: one line saying what to give, exit 2."""
    out = run_cli("run", env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "filewarden: no config file (--config, $FILEWARDEN_CONFIG or /etc/filewarden/config.toml)"
        " and no --root DIR given"
    ]


def test_check_config_ok(tmp_path: Path) -> None:
    """check-config on a good file exits 0 and describes the roots."""
    out = run_cli("check-config", "--config", str(EXAMPLE))
    assert out.returncode == 0, out.stderr
    assert "/srv/photos" in out.stdout


def test_embedded_default_uses_xdg_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`run --root` with no file keeps state under XDG_STATE_HOME and the socket under XDG_RUNTIME_DIR."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    cfg = config.embedded([tmp_path])
    assert cfg.daemon.state_dir == tmp_path / "state" / "filewarden"
    assert cfg.daemon.socket == tmp_path / "run" / "filewarden.sock"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    cfg = config.embedded([tmp_path])
    assert str(cfg.daemon.state_dir).startswith("/tmp/filewarden-")
    assert str(cfg.daemon.socket).startswith("/tmp/filewarden-")
