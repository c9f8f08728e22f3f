"""Exit codes: sendmail's sysexits.h, so an MTA pipe (Postfix, Exim, sendmail) into `emailrouter
ingest` retries, bounces or accepts as it should. Postfix bounces on any code it does not know,
so nothing on that path exits with a code outside this list."""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0  # accepted (quarantined included: the raw message is kept)
    FAILURE = 1  # the command ran and reports a failure (a replay that did not deliver)
    USAGE = 64  # EX_USAGE: wrong arguments
    DATAERR = 65  # EX_DATAERR: the input is not a mail message (empty, blank)
    NOINPUT = 66  # EX_NOINPUT: the input file cannot be read
    NOUSER = 67  # EX_NOUSER: unknown tenant or mailbox
    SOFTWARE = 70  # EX_SOFTWARE: an internal error
    TEMPFAIL = 75  # EX_TEMPFAIL: cannot take it now (CRM, AWS); the sender tries again later
    CONFIG = 78  # EX_CONFIG: the deployment or a tenant's configuration is wrong
