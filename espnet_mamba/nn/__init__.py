"""Building blocks: Mamba mixers, bidirectional wrappers, attention, encoder layers, the
waveform CNN and the positional conv."""
