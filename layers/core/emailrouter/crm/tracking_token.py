"""CRM tracking tokens: `<prefix>:<base><user number><counter>`, e.g. `CRM:0001001`.

As Dynamics composes them: the organization's prefix (default `CRM`), a base number that
tells deployments apart, a fixed number of digits for the sending user and a fixed number for
a per-user counter that wraps. Tokens go at the end of the subject of mail sent from the CRM;
replies carry them back, and correlation finds the thread by them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TrackingTokenFormat:
    prefix: str = "CRM"
    base: int = 0
    user_digits: int = 3
    counter_digits: int = 3

    def format(self, user_number: int, counter: int) -> str:
        user = user_number % 10**self.user_digits
        count = counter % 10**self.counter_digits
        return f"{self.prefix}:{self.base}{user:0{self.user_digits}d}{count:0{self.counter_digits}d}"

    @property
    def pattern(self) -> re.Pattern[str]:
        """Matches this organization's tokens only: its prefix, base and digit counts."""
        digits = self.user_digits + self.counter_digits
        return re.compile(rf"(?<![\w:]){re.escape(self.prefix)}:{self.base}\d{{{digits}}}(?!\d)")

    def find(self, subject: str) -> str | None:
        """The last token of this organization in `subject` (other tenants' tokens are ignored)."""
        matches = self.pattern.findall(subject)
        return matches[-1] if matches else None
