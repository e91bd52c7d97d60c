"""Which frames are evaluated (kept free of heavy imports: the command line's options use it)."""

SAMPLING_ALL = "all"
SAMPLING_CONSISID = "consisid16"    # ConsisID's 16 uniform frames, cosines clipped at 0
SAMPLINGS = (SAMPLING_ALL, SAMPLING_CONSISID)
