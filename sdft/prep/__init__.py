"""Dataset tools that read a dataset without changing it: the doctor (sdft/prep/doctor/) and face identity."""
