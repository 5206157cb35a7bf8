"""crowdprop: instance masks annotated by yes/no crowd answers propagated through cluster trees.

Implements and extends Papadopoulos, Weber and Torralba, "Scaling up Instance
Annotation via Label Propagation", ICCV 2021.
"""
__version__ = "0.1.0"
