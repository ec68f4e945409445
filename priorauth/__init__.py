"""priorauth: prior-authorization packets for IVIG and rituximab.

Library use::

    from priorauth import load_referral, load_criteria, determine
    det = determine(load_referral("samples/dm-steroid-intolerance.yaml"), load_criteria())
    print(det.determination, det.missing)
"""

from .determination import Determination, determine
from .errors import CriteriaError, InputError, PriorAuthError
from .policy import load_criteria
from .referral import Referral, load_referral

__all__ = ["Determination", "determine", "CriteriaError", "InputError", "PriorAuthError",
           "load_criteria", "Referral", "load_referral"]
__version__ = "0.1.0"
