"""Model families of hf-localvit, one folder each."""
