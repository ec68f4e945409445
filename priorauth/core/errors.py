"""Exceptions that carry a message fit to show a user (file, field, what is wrong)."""


class PriorAuthError(Exception):
    """Base class: the message names the file and field, never patient data."""

    exit_code = 1


class InputError(PriorAuthError):
    """Bad referral or option: the user can fix it (exit code 2)."""

    exit_code = 2


class CriteriaError(PriorAuthError):
    """A criteria file is malformed (exit code 2: fix the file)."""

    exit_code = 2
