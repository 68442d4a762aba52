"""Imported first by every benchmark that generates: the committed records (records/, `00c_records`) would answer its
generations from the repository, and a benchmark times fresh work. Points COTFAITH_RECORDS_DIR at an empty folder."""
import os
import tempfile

os.environ['COTFAITH_RECORDS_DIR'] = tempfile.mkdtemp(prefix='bench-no-records-')
