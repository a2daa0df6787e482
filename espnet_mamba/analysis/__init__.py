"""Layer-wise analyses of speech SSL models (see docs/analysis.md).

* :mod:`~espnet_mamba.analysis.purity`: phone purity, cluster purity, PNMI of k-means units;
* :mod:`~espnet_mamba.analysis.cca`: PWCCA of layer features with phone / word / speaker labels;
* :mod:`~espnet_mamba.analysis.mine`: MINE estimates of I(input features; layer features);
* :mod:`~espnet_mamba.analysis.alignments`, :mod:`~espnet_mamba.analysis.data`: CTM / TextGrid
  alignments and Kaldi data files; :mod:`~espnet_mamba.analysis.features`,
  :mod:`~espnet_mamba.analysis.corpus`: frame features of a model over a set of utterances;
  :mod:`~espnet_mamba.analysis.report`: per-layer TSV tables and plots.
"""
