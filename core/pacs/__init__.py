"""The PACS as the place images come from and answers go to: DICOM networking (pynetdicom) and results (highdicom)."""
