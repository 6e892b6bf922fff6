"""The differentiable ops of the GPU backend. `gpu.ops` exports the same names and signatures.

Each op is a class with forward/backward on arrays (see ref.tensor.Op) and a lowercase functional
wrapper taking Tensors; the wrappers listed here are the API.
"""
from gpu.ops.elementwise import (  # noqa: A004 (abs, pow: the op names)
    abs, add, div, exp, log, mul, neg, pow, relu, sigmoid, sign, sqrt, sub, tanh)
from gpu.ops.reduce import max, mean, sum  # noqa: A004
from gpu.ops.shape import concatenate, flatten, getitem, pad, reshape, transpose
from gpu.ops.matmul import linear, matmul
from gpu.ops.loss import cross_entropy, kl_div, log_softmax, softmax
from gpu.ops.norm import batch_norm
from gpu.ops.dropout import dropout
from gpu.ops.conv import conv2d
from gpu.ops.pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d
from gpu.ops.update import pgd_step, sgd_update_, sgdw_noise_update_, sgdw_update_
from gpu.ops.mask import keep_largest, masked_weight, subnet_weight

__all__ = ["abs", "add", "div", "exp", "log", "mul", "neg", "pow", "relu", "sigmoid", "sign",
           "sqrt", "sub", "tanh", "max", "mean", "sum", "concatenate", "flatten", "getitem", "pad",
           "reshape", "transpose", "linear", "matmul", "cross_entropy", "kl_div", "log_softmax",
           "softmax", "batch_norm", "dropout", "conv2d", "adaptive_avg_pool2d", "avg_pool2d",
           "max_pool2d", "pgd_step", "sgd_update_", "sgdw_noise_update_", "sgdw_update_",
           "keep_largest", "masked_weight",
           "subnet_weight"]
