"""Page image to text lines: the line finders (learned and OpenCV) and the printed-vs-handwritten filter."""
