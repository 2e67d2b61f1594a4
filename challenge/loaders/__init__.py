"""Reading a release for a method: lazy numpy access, PyTorch / TensorFlow / JAX adapters
(each framework imported only when its adapter is called) and the method protocol that feeds test
blends to any callable. Imports only ``challenge.contract``.
"""
