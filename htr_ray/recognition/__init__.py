"""Line images to text: the recognizer, its spec, decoders (greedy, beam, lexicon, character LM) and export."""
