"""Watch: inotify events become journal entries."""
