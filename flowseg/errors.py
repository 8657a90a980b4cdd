"""Typed errors raised by the pure layer and mapped to exit codes in one place (the CLIs).

Every message is one line that names the rule or route and says what to do.
"""

from __future__ import annotations


class FlowsegError(Exception):
    """Base class; exit_code is what the command exits with."""

    exit_code = 1


class InvalidValue(FlowsegError):
    """A value outside what the model accepts (raised while building model objects)."""

    exit_code = 3


class UnsupportedRule(FlowsegError):
    """A controller rule that Flow-Spec cannot express."""

    exit_code = 3


class BadInput(FlowsegError):
    """Input text (iptables-save, vtysh JSON) that cannot be read."""

    exit_code = 3


class BadRoute(FlowsegError):
    """A Flow-Spec route that cannot be turned into an iptables rule exactly."""

    exit_code = 3


class ToolFailed(FlowsegError):
    """An external tool (iptables-save, birdc, vtysh, iptables-restore) failed or is missing."""

    exit_code = 4


class BirdRejected(FlowsegError):
    """BIRD refused the generated configuration; the previous one stays in force."""

    exit_code = 5


class ApplyFailed(FlowsegError):
    """iptables-restore refused the new chain; the chain in force is unchanged."""

    exit_code = 6


EXIT_CODES = """\
Exit status: 0 done (applied or nothing to change); 2 usage error;
3 input that cannot be translated (rule, route or file); 4 a tool failed or is missing;
5 BIRD rejected the configuration; 6 iptables-restore refused the chain."""
