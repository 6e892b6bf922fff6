"""Provable robustness: IBP and CROWN-IBP bounds, certified training, randomized smoothing.

    lower, upper = ref.certify.ibp_bounds(model, x, eps)               # logits over the eps-box
    lb = ref.certify.margin_lower_bounds(model, x, y, eps, method="crown-ibp")   # z_y - z_j
    acc = ref.certify.verified_accuracy(model, x, y, eps, method="ibp")
    pred, radius = ref.certify.smoothed_certify(model, x, sigma, n0, n, alpha, rng)
    acc_at_r = ref.certify.certified_accuracy(pred, radius, y, [0.0, 0.25, 0.5])
    objective = ref.objectives.get("crown_ibp", eps=0.007, ramp_epochs=60, steps_per_epoch=...)

Exact semantics (from the HYDRA authors' code) and where this differs from it: the docstrings of
ibp, crown, smoothing and objectives, and ALGORITHMS.md section 10.
"""
from ref.certify.crown import margin_lower_bounds, mixed_margin_lower_bounds, verified_accuracy
from ref.certify.ibp import bound_layers, ibp_bounds
from ref.certify.objectives import (CERTIFIED_OBJECTIVES, CertifiedTraining, EpsRamp,
                                    IBPTraining, StabilityTraining)
from ref.certify.smoothing import certified_accuracy, clopper_pearson_lower, smoothed_certify

__all__ = ["CERTIFIED_OBJECTIVES", "CertifiedTraining", "EpsRamp", "IBPTraining",
           "StabilityTraining", "bound_layers", "certified_accuracy", "clopper_pearson_lower",
           "ibp_bounds", "margin_lower_bounds", "mixed_margin_lower_bounds", "smoothed_certify",
           "verified_accuracy"]
