"""Pruning: masks beside the weights, budgets, and the pruning methods (one module each).

    from ref import prune
    masks = prune.magnitude.gup_masks(prune.weights(model), keep=0.1)
    prune.apply_masks(model, masks)
    prune.mask_optimizer(optimizer, model)          # pruned weights stay exactly zero
    prune.sparsity(model)["global"]["sparsity"]     # 0.9

masks       prunable layers, masks as `weight_mask` buffers, sparsity accounting
budgets     topk_mask, adaptive / uniform / global keep ratios (pure array functions)
magnitude   GUP and LUP one-shot magnitude pruning
lottery     the adversarial lottery ticket (IMP with rewinding) and inverse weights inheritance
structured  FP (L1 filter pruning) and NS (network slimming) channel masks, thinning
hydra       HYDRA: scores trained with the robust objective choose the kept weights
subnet      robust subnetworks of never-trained networks (RBSN, edge-popup, RST)
bcs         BCS: sparse robust training from scratch (signed magnitudes, rewiring to a global
            budget) and its fixed-connectivity baselines
dnr         DNR: sparse robust training from scratch (magnitude pruning and momentum-guided
            regrowth every epoch, irregular or whole channels)
sensitivity layer sensitivity, compression, channels present, statistics of the kept weights
"""
from ref.prune import (bcs, budgets, dnr, hydra, lottery, magnitude, masks, sensitivity,
                       structured, subnet)
from ref.prune.budgets import (adaptive_keep_ratios, global_topk_masks, kept_count, layer_masks,
                               topk_mask, uniform_keep_ratios)
from ref.prune.masks import (apply_masks, effective_weights, expand_channel_mask, get_masks,
                             mask_optimizer, prunable_layers, remove_masks, sparsity, weights)
from ref.prune.hydra import scaled_score_init
from ref.prune.sensitivity import compression_ratio

__all__ = ["adaptive_keep_ratios", "apply_masks", "bcs", "budgets", "compression_ratio", "dnr",
           "effective_weights", "expand_channel_mask", "get_masks", "global_topk_masks", "hydra",
           "kept_count", "layer_masks", "lottery", "magnitude", "mask_optimizer", "masks",
           "prunable_layers", "remove_masks", "scaled_score_init", "sensitivity", "sparsity",
           "structured", "subnet", "topk_mask", "uniform_keep_ratios", "weights"]
