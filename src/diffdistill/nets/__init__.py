"""Evaluation architectures (ConvNet-D3..D6, AlexNet, VGG11, ResNet18, ViT) behind one registry."""

from diffdistill.nets.base import Classifier, init_parameters, make_norm
from diffdistill.nets.registry import NET_NAMES, NetFactory, arch_family, build_net, convnet_depth_for, net_factory

__all__ = ["NET_NAMES", "Classifier", "NetFactory", "arch_family", "build_net", "convnet_depth_for", "init_parameters",
           "make_norm", "net_factory"]
