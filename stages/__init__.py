"""One thin command-line module per DVC stage: read params, call the library, write a manifest."""
