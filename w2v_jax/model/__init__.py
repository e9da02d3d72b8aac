"""What word2vec is: parameters, output layers and their losses, noise, the Huffman tree.

Pure functions of arrays: no config, no I/O, no RNG inside a loss.
"""
