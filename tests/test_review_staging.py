"""Review: cleaning up after a killed folder write touches only that folder's own staging.

``remove_stale_staging(folder)`` finds a killed write's leftovers by their name's prefix; a folder name
holding glob characters (``run[1]``) must not be read as a pattern that matches another folder's leftovers
(``.run1.staging-...``), or a killed export of ``run1`` is moved in as ``run[1]``. Real folders and a
real finished process's pid.
"""

from __future__ import annotations

import subprocess
import sys

from metalabel.files import STAGING_MARK, remove_stale_staging


def test_a_folder_name_with_glob_characters_leaves_another_folders_leftovers_alone(tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    dead = int(finished.stdout)
    # run1's export was killed between moving its previous version aside and renaming the new one in
    aside = tmp_path / f".run1{STAGING_MARK}{dead}-0a1b2c3d-old"
    aside.mkdir()
    (aside / "labels.csv").write_text("uri,label\n")

    assert remove_stale_staging(tmp_path / "run[1]") == []
    assert not (tmp_path / "run[1]").exists() and (aside / "labels.csv").is_file()
    remove_stale_staging(tmp_path / "run1")  # its own cleanup puts it back
    assert (tmp_path / "run1" / "labels.csv").is_file()
