"""vistok's own H.264 (AVC) writer: an encoder that chooses macroblock syntax, the decoder's reconstruction
of that syntax, and the syntax written as a baseline-profile CAVLC stream that FFmpeg decodes to the same
samples."""
