"""WordNet -> WordTree: the label hierarchy of YOLO9000 (no torch, no Ray).

Modules import nltk only where they read WordNet (:mod:`wordtree_build.wordnet`), so the
file readers and writers work wherever the package is installed.
"""
