"""What every command's ``--help`` looks like: the module's docstring as written, and each option's default."""

from __future__ import annotations

import argparse
import copy


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks and ends every option's help with its default, unless the
    help already says what the default is (``default: the checkpoint's``): a user sees ``--lr``'s
    1e-4 without opening the source."""

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and action.option_strings and action.default is not argparse.SUPPRESS:
            action = copy.copy(action)  # argparse prints nothing after an option without help: give it its default
            action.help = f"(default: {shown_default(action)})"
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or action.default is argparse.SUPPRESS or "default" in text.lower():
            return text
        return f"{text} (default: {shown_default(action)})".lstrip()


def shown_default(action: argparse.Action) -> str:
    default = action.default
    if default is None:
        return "none"
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, (list, tuple)):
        return " ".join(str(item) for item in default) or "none"
    return str(default).replace("%", "%%")  # argparse formats help with %
