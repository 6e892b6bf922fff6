"""Modules (torch.nn style): the Module base class, layers, batch norm, Sequential and init."""
from ref.nn import init
from ref.nn.containers import Sequential
from ref.nn.layers import (AdaptiveAvgPool2d, AvgPool2d, Conv2d, Dropout, Flatten, Identity,
                           Linear, MaxPool2d, ReLU)
from ref.nn.module import Module, backend
from ref.nn.norm import BatchNorm1d, BatchNorm2d
from ref.nn.subnet import SubnetConv2d, SubnetLinear, dense_form, subnet_form

__all__ = ["AdaptiveAvgPool2d", "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "Conv2d", "Dropout",
           "Flatten", "Identity", "Linear", "MaxPool2d", "Module", "ReLU", "Sequential",
           "SubnetConv2d", "SubnetLinear", "backend", "dense_form", "init", "subnet_form"]
