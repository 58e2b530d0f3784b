"""What ``hotplugd check --backend libvirt`` says of the domains: conflicts (exit 1) and the inventory."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hotplugd_guestagent.link import AgentLink


def conflicts(links: Mapping[str, AgentLink]) -> list[str]:
    """An agent that does not answer, a guest whose kernel onlines by itself: one message each."""
    messages = []
    for name, link in sorted(links.items()):
        if not link.healthy:
            messages.append(f"domain {name}: its guest agent does not answer through libvirt "
                            f"({link.down_reason}): is qemu-guest-agent running in the guest?")
        elif link.kernel_onlines:
            messages.append(f"domain {name}: its kernel onlines hot-added memory itself "
                            f"(auto_online_blocks={link.auto_online}); boot it with memhp_default_state=offline")
    return messages


def inventory(uri: str, links: Mapping[str, AgentLink], unselected: Sequence[str]) -> list[str]:
    """The domains selected (their agent, blocks and plan) and those not selected, one line each."""
    lines = [f"libvirt {uri}: {len(links)} running domain(s) selected, {len(unselected)} not selected"]
    for name, link in sorted(links.items()):
        blocks = link.snapshot or {}
        offline = sum(1 for online in blocks.values() if not online)
        agent = "agent up" if link.healthy else f"agent down ({link.down_reason})"
        if not link.healthy:
            plan = "hotplugd onlines through the agent once it answers"
        elif link.kernel_onlines:
            plan = f"the guest's kernel onlines (auto_online_blocks={link.auto_online}); hotplugd verifies"
        else:
            plan = "hotplugd onlines through the guest agent (qemuAgentCommand)"
        lines.append(f"  domain {name}: {agent}, {len(blocks)} blocks ({offline} offline); plan: {plan}")
    lines += [f"  domain {name}: not selected (never touched)" for name in unselected]
    return lines
