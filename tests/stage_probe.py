"""Run one `isim` command and write which params keys and which isim modules it used.

    python stage_probe.py OUT.json -- <isim arguments>

Every read of a config field is recorded by its dotted key; modules are those imported."""
import json
import sys

from isim import cli, config

reads: set[str] = set()
paths: dict[int, str] = {}
_get = config.Section.__getattribute__


def _recording(self, name):
    value = _get(self, name)
    if not name.startswith("_") and name in type(self).model_fields:
        where = paths.get(id(self))
        if where is not None:
            reads.add(f"{where}.{name}" if where else name)
    return value


_kept: list = []  # indexed sections stay alive, so their ids are never reused by other objects


def _index(section, prefix: str) -> None:
    paths[id(section)] = prefix
    _kept.append(section)
    for name in type(section).model_fields:
        value = _get(section, name)
        if isinstance(value, config.Section):
            _index(value, f"{prefix}.{name}" if prefix else name)


_load = config.load


def _load_and_record(path):
    cfg = _load(path)
    _index(cfg, "")
    return cfg


config.load = _load_and_record
_from_dict = config.from_dict


def _from_dict_and_record(raw):  # configs built from params (a tuning trial's) are recorded too
    cfg = _from_dict(raw)
    _index(cfg, "")
    return cfg


config.from_dict = _from_dict_and_record
config.Section.__getattribute__ = _recording

out, argv = sys.argv[1], sys.argv[3:]
code = cli.main(argv)
modules = sorted(m.__file__ for name, m in list(sys.modules.items())
                 if (name == "isim" or name.startswith("isim.")) and getattr(m, "__file__", None))
with open(out, "w") as f:
    json.dump({"code": code, "params": sorted(reads), "modules": modules}, f, indent=1)
sys.exit(code)
