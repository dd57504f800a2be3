"""The embedded default data set (binarised Fashion-MNIST, bit-packed HDF5) and the script that builds it."""
