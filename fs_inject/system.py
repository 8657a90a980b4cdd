"""The switch side's contact with the system: vtysh, iptables-save and iptables-restore.

Checked with FRR 8.4.4 and iptables 1.8.9. vtysh exits 0 with `{"warning": ...}` for some
failures and exits 1 with `bgpd is not running` on stderr when bgpd is down (wire facts 1.3):
neither means "no routes", and neither may empty the chain.
"""

from __future__ import annotations

import logging

from flowseg.errors import ApplyFailed, ToolFailed
from flowseg.model import Family
from flowseg.run import iptables_save, run

log = logging.getLogger(__name__)


class Switch:
    """vtysh and iptables on the switch, as one object the CLI is given."""

    def __init__(self, pathspace: str | None = None, wait: int = 10) -> None:
        self.pathspace = pathspace
        self.wait = wait

    def vtysh(self, command: str) -> str:
        argv = ["vtysh"]
        if self.pathspace:
            argv += ["-N", self.pathspace]
        res = run([*argv, "-c", command])
        if res.exit_code != 0:
            raise ToolFailed(f"vtysh -c '{command}': {res.first_error_line()}")
        return res.stdout

    def flowspec_json(self, family: Family) -> str:
        return self.vtysh(f"show bgp {family.afi} flowspec detail json")

    def iptables_save(self, family: Family) -> str:
        return iptables_save(family)

    def iptables_restore(self, family: Family, text: str) -> None:
        prog = "iptables-restore" if family is Family.V4 else "ip6tables-restore"
        # --wait: another writer holding the xtables lock delays us instead of failing us.
        res = run([prog, "--noflush", "--wait", str(self.wait)], input=text)
        if res.exit_code != 0:
            raise ApplyFailed(f"{prog}: {res.first_error_line()}")
