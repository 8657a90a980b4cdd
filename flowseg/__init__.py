"""flowseg: distributed micro-segmentation with BGP Flow-Spec (RFC 8955, RFC 8956).

The shared package: the rule model and the iptables grammar that fs-fetch and fs-inject both use.
"""

from pathlib import Path

__version__ = "0.1.0"


def templates_dir() -> Path:
    """The Jinja2 templates: installed as flowseg/templates, or templates/ in a source tree."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / "flowspec.conf.j2").is_file():
            return candidate
    raise FileNotFoundError("flowseg templates not found; reinstall the package")
