//! Beaker's base64 utilities (b64encode/b64decode with altchars).
