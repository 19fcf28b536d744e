"""Input adapters beyond text: images through OCR (rapidocr-onnxruntime) and voice through speech-to-text
(faster-whisper). Both need the `media` extra; their models ship inside PyPI packages, nothing is fetched at run time.

An adapter never raises on a user's bad attachment: it returns a short note in place of the text, so the user gets an
answer that says what went wrong instead of a job that fails and retries."""
