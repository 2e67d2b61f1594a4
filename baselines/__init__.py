"""Reference methods of blendbench: sep (SExtractor cold/hot), the noise-floor oracle and the
paper's two Keras networks (blend2flux, blend2mask2flux). Each writes a submission folder."""
