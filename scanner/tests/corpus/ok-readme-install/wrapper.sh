#!/bin/sh
exec mytool "$@"
