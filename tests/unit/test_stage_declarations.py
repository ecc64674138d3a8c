"""dvc.yaml must declare everything a stage reads, checked from the code without running it:
each stage module's reads of the config (through the settings it builds, isim/settings.py, and
the helpers it hands the config to) must be among its ``params``, and every isim module it can
import among its ``deps``."""
import ast
from pathlib import Path

import yaml

from conftest import REPO
from isim.config import Config, Section

SRC = REPO / "src/isim"
# where and how a stage runs, never what it computes (README: "Parameters and experiments")
UNLISTED_PARAMS = ("runtime", "tracking")
# argument parsing, typed config (its values are the params), errors and MLflow code (with the
# dvc.yaml reader it finds the dataset's DVC hash by)
UNLISTED_MODULES = {"__init__.py", "cli.py", "config.py", "errors.py", "tracking.py", "mlflow_session.py",
                    "project.py", "visualize.py", "stages/__init__.py"}
# helpers that take the whole config to learn where and how to run (MLflow, threads, device)
RUNNERS = {"stage_run", "setup"}


def _functions(path: Path) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)}


HELPERS = {"settings": _functions(SRC / "settings.py"), "stages": _functions(SRC / "stages/__init__.py")}


def _field_path(path: list[str]) -> tuple[str, bool] | None:
    """The longest prefix of ``path`` that names config fields, and whether it is a section; None
    for a method of the whole config (``cfg.to_dict()``: the params a checkpoint keeps, no key)."""
    model: object = Config
    kept: list[str] = []
    for name in path:
        if not (isinstance(model, type) and issubclass(model, Section)) or name not in model.model_fields:
            break
        kept.append(name)
        model = model.model_fields[name].annotation
    if path and not kept:
        return None
    return ".".join(kept), isinstance(model, type) and issubclass(model, Section)


def _chain(node: ast.AST, names: dict[str, str]) -> tuple[str, bool] | None:
    """``cfg.a.b`` (or ``alias.b`` with alias = cfg.a) as ("a.b", is a section); None if not
    rooted at the config."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not (isinstance(node, ast.Name) and node.id in names):
        return None
    root = names[node.id]
    return _field_path((root.split(".") if root else []) + parts[::-1])


def reads(func: ast.FunctionDef, bound: dict[str, str], local: dict[str, ast.FunctionDef],
          seen: set[str] | None = None) -> set[str]:
    """The config keys ``func`` reads, its parameters ``bound`` to config paths ("" = the whole
    config); "" in the result means the whole config reached code this check cannot follow."""
    seen = set() if seen is None else seen
    names = dict(bound)
    out: set[str] = set()
    defined: set[int] = set()  # alias definitions: read through the alias
    for node in ast.walk(func):  # aliases: ac = cfg.affinity; sc, rt = cfg.segmenter, cfg.runtime
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            pairs = (zip(node.targets[0].elts, node.value.elts) if isinstance(node.targets[0], ast.Tuple)
                     and isinstance(node.value, ast.Tuple) else [(node.targets[0], node.value)])
            for target, value in pairs:
                found = _chain(value, names) if isinstance(value, ast.Attribute) else None
                if isinstance(target, ast.Name) and found is not None:
                    names[target.id] = found[0]
                    defined.add(id(value))
                    if not found[1]:  # a value, not a section: read here
                        out.add(found[0])
    inner = {id(n.value) for n in ast.walk(func) if isinstance(n, ast.Attribute)}
    passed: set[int] = set()
    for node in ast.walk(func):
        if not isinstance(node, ast.Call):
            continue
        callee = node.func
        name = callee.attr if isinstance(callee, ast.Attribute) else callee.id if isinstance(callee, ast.Name) else ""
        scope: dict[str, ast.FunctionDef] = {}
        if isinstance(callee, ast.Attribute):
            if isinstance(callee.value, ast.Name) and callee.value.id == "settings":
                scope = HELPERS["settings"]
        else:
            scope = local if name in local else HELPERS["stages"]
        target = scope.get(name)
        params = [a.arg for a in target.args.args] if target is not None else []
        args = [(params[i] if i < len(params) else None, a) for i, a in enumerate(node.args)]
        args += [(k.arg, k.value) for k in node.keywords]
        for key, arg in args:
            found = _chain(arg, names) if isinstance(arg, (ast.Name, ast.Attribute)) else None
            if found is None:
                continue
            passed.add(id(arg))
            if name in RUNNERS:
                continue
            if target is not None and key is not None:
                if f"{name}:{key}:{found[0]}" not in seen:
                    seen.add(f"{name}:{key}:{found[0]}")
                    out |= reads(target, {key: found[0]}, scope, seen)
            else:
                out.add(found[0])  # handed to code this check does not follow: all of it
    for node in ast.walk(func):
        if isinstance(node, ast.Attribute) and id(node) not in inner | defined | passed:
            found = _chain(node, names)
            if found is not None:
                out.add(found[0])
    return out


def stage_reads(module: Path) -> set[str]:
    local = _functions(module)
    return reads(local["run"], {"cfg": ""}, local)


def imports(module: Path) -> set[Path]:
    """The isim modules ``module`` imports, at its top or inside its functions."""
    found: set[Path] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "isim":
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] != "isim":
                continue
            for i in range(1, len(parts) + 1):  # every package on the way runs its __init__
                base = SRC.parent.joinpath(*parts[:i])
                for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                    if candidate.is_file():
                        found.add(candidate)
    return found


def closure(module: Path) -> set[Path]:
    todo, seen = [module], {module}
    while todo:
        for m in imports(todo.pop()):
            inner = m.relative_to(SRC).as_posix()
            if m not in seen and inner not in UNLISTED_MODULES:
                seen.add(m)
                todo.append(m)
    return seen


def _covered(item: str, declared: list[str], sep: str) -> bool:
    return any(item == d or item.startswith(d + sep) for d in declared)


def _stage_module(stage: dict) -> Path:
    return SRC / "stages" / f"{stage['cmd'].split()[1].replace('-', '_')}.py"  # isim <command> ...


def problems(stages: dict | None = None) -> list[str]:
    """What dvc.yaml's ``stages`` (default: the project's) fail to declare."""
    out = []
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"] if stages is None else stages
    for name, stage in stages.items():
        module = _stage_module(stage)
        declared = [p if isinstance(p, str) else next(iter(p)) for p in stage.get("params", [])]
        if "params.yaml" not in declared:  # `- params.yaml:` lists every key (the check stage)
            for key in sorted(stage_reads(module)):
                if not key:
                    out.append(f"{name}: the whole config reaches code this check cannot follow")
                elif not (key.startswith(UNLISTED_PARAMS) or _covered(key, declared, ".")):
                    out.append(f"{name} reads params key {key!r} but does not list it")
        deps = [d for d in stage["deps"] if d.startswith("src/")]
        for file in sorted(closure(module)):
            rel = file.relative_to(SRC.parent).as_posix()
            if file.relative_to(SRC).as_posix() in UNLISTED_MODULES or file.stat().st_size == 0:
                continue
            if not _covered(f"src/{rel}", deps, "/"):
                out.append(f"{name} can run src/{rel} but does not list it in deps")
    return out


def test_stages_declare_the_params_and_modules_they_use():
    assert not problems(), "\n".join(problems())


def test_an_undeclared_key_or_module_is_reported():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    stages["pseudo_baseline"]["params"].remove("threshold")
    stages["random_walk"]["deps"].remove("src/isim/pseudo")
    found = problems(stages)
    assert "pseudo_baseline reads params key 'threshold' but does not list it" in found
    assert "random_walk can run src/isim/pseudo/walk.py but does not list it in deps" in found
    assert len(found) == 1 + sum(1 for f in found if f.startswith("random_walk can run src/isim/pseudo/"))


def test_the_check_sees_reads_through_settings_aliases_and_helpers():
    """The check can fail: keys read directly, through an alias, through isim/settings.py and
    through a helper the config is handed to are all found."""
    train_affinity = stage_reads(SRC / "stages/train_affinity.py")
    assert {"holdout.split", "affinity", "encoder", "seed", "train.momentum", "transform"} <= train_affinity
    assert "threshold" not in train_affinity and "random_walk" not in train_affinity
    walk = stage_reads(SRC / "stages/random_walk.py")
    assert {"cam.keep", "affinity.radius", "random_walk", "crf", "cam.scales"} <= walk
    assert "threshold" not in walk  # its masks are cut by the walk's rule, not params.yaml's threshold
    assert "train" not in walk and not any(k.startswith("train.") for k in walk)
    segmenter = stage_reads(SRC / "stages/evaluate_segmenter.py")
    assert {"segmenter.crf", "segmenter.scales"} <= segmenter and "segmenter.epochs" not in segmenter
    assert any(p.name == "walk.py" for p in closure(SRC / "stages/random_walk.py"))
    assert not _covered("affinity.radius", ["train"], ".")
