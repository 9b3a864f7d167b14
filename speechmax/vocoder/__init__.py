"""speechmax.vocoder"""
