"""The browser agent: one attempt of a Playwright/Chromium task per process (a Job's pod).

``python -m wallestars_browser`` runs the attempt the WALLESTARS_* environment describes;
``python -m wallestars_browser --self-test`` checks the image can do its work.
"""
