"""The differentiable ops of the NumPy backend. `gpu.ops` exports the same names and signatures.

Each op is a class with forward/backward on arrays (see ref.tensor.Op) and a lowercase functional
wrapper taking Tensors; the wrappers listed here are the API.
"""
from ref.ops.elementwise import (  # noqa: A004 (abs, pow: the op names)
    abs, add, div, exp, log, mul, neg, pow, relu, sigmoid, sign, sqrt, sub, tanh)
from ref.ops.reduce import max, mean, sum  # noqa: A004
from ref.ops.shape import concatenate, flatten, getitem, pad, reshape, transpose
from ref.ops.matmul import linear, matmul
from ref.ops.loss import cross_entropy, kl_div, log_softmax, softmax
from ref.ops.norm import batch_norm
from ref.ops.dropout import dropout
from ref.ops.conv import conv2d
from ref.ops.pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d
from ref.ops.update import pgd_step, sgd_update_, sgdw_noise_update_, sgdw_update_
from ref.ops.mask import keep_largest, masked_weight, subnet_weight

__all__ = ["abs", "add", "div", "exp", "log", "mul", "neg", "pow", "relu", "sigmoid", "sign",
           "sqrt", "sub", "tanh", "max", "mean", "sum", "concatenate", "flatten", "getitem", "pad",
           "reshape", "transpose", "linear", "matmul", "cross_entropy", "kl_div", "log_softmax",
           "softmax", "batch_norm", "dropout", "conv2d", "adaptive_avg_pool2d", "avg_pool2d",
           "max_pool2d", "pgd_step", "sgd_update_", "sgdw_noise_update_", "sgdw_update_",
           "keep_largest", "masked_weight",
           "subnet_weight"]
