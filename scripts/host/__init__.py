"""Host: what runs on the air-gapped server: doctor, preflight, install, check, push."""
